"""yolo-trainer: runs inside the training pod; S3 dataset in, fine-tuned YOLO weights out."""
