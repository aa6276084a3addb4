{{- /*
The console quick start "Fine-tune YOLO on your own images", in two variants that share every step but where
the operator was installed from and where its TrainingJobs are shown:
  install "helm": the chart's (templates/console.yaml): TrainingJobs under Home -> API Explorer, status in YAML.
  install "olm":  the OLM bundle's (python -m yolo_operator.gen.bundle): Operators -> Installed Operators, and the
                  details page the CSV's descriptors draw.
Usage: include "yolo-operator.consoleQuickStart" (dict "root" $ "install" "helm")
*/}}
{{- define "yolo-operator.consoleQuickStart" -}}
{{- $root := .root }}
{{- if not (has .install (list "helm" "olm")) }}{{ fail (printf "consoleQuickStart: install must be helm or olm, not %v" .install) }}{{ end }}
{{- $olm := eq .install "olm" }}
apiVersion: console.openshift.io/v1
kind: ConsoleQuickStart
metadata:
  name: {{ include "yolo-operator.fullname" $root }}-finetune
  labels:
    {{- include "yolo-operator.labels" $root | nindent 4 }}
spec:
  displayName: Fine-tune YOLO on your own images
  durationMinutes: 15
  tags: [yolo, ultralytics, training, gpu]
  description: >-
    Fine-tune a COCO-pretrained YOLO model on a dataset in S3 with a TrainingJob, watch its epochs and mAP,
    and find the trained weights.
  prerequisites:
    {{- if $olm }}
    - The YOLO Operator is installed from **Operators → OperatorHub** for all namespaces or for your project, and reconciles TrainingJobs there.
    {{- else }}
    - The YOLO Operator is installed with its Helm chart (`helm install yolo-operator charts/yolo-operator`, see the project's docs/install.md), watching all namespaces or your project (the chart's `watchNamespaces`).
    {{- end }}
    - An S3-compatible object store (AWS S3, MinIO, OpenShift Data Foundation) holding a dataset in Ultralytics YOLO format (a prefix with data.yaml, images/ and labels/, or a Roboflow "YOLOv8" export zip), and a bucket for the results.
  introduction: >-
    A **TrainingJob** runs one Ultralytics training as a Kubernetes Job: the operator stages the dataset from
    S3, trains (on a GPU when `spec.resources.gpus` asks for one), and writes the weights, metrics and exports
    back to S3. In this quick start you store the S3 credentials, start a transfer-learning job that trains
    only the head of YOLOv8n, follow it, and find the best weights.
  tasks:
    - title: Create the S3 credentials Secret
      description: |-
        The trainer pod reads the keys of your object store from a Secret named in the TrainingJob
        (`spec.s3.credentialsSecretRef`); the operator never reads it.

        1. In the **Administrator** perspective go to **Workloads → Secrets** in your project, then **Create → From YAML**.
        2. Paste the Secret below, replace both values with your access key and secret key, and click **Create**:

        ```yaml
        {{- $root.Files.Get "files/examples/s3-secret.yaml" | trimSuffix "\n" | nindent 8 }}
        ```

        Or from a terminal: `oc create secret generic s3-credentials --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...`
      review:
        instructions: |-
          Is a Secret named **s3-credentials** with the keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` listed under **Workloads → Secrets**?
        failedTaskHelp: Check that you are in the project where you will create the TrainingJob, and that the key names are exactly as above.
      summary:
        success: You stored the S3 credentials.
        failed: Try the steps again.
    - title: Create the TrainingJob
      description: |-
        {{- if $olm }}
        1. Go to **Operators → Installed Operators → YOLO Operator**, open the **TrainingJob** tab and click **Create TrainingJob**.
        2. Switch to the **YAML view** and, under **Samples**, choose **Fine-tune a frozen backbone** (click **Try it**).
        {{- else }}
        1. Go to **Home → API Explorer**, find **TrainingJob** (group `yolo-operator.io`), open its **Instances** tab and click **Create TrainingJob**.
        2. In the YAML editor's side panel, under **Samples**, choose **Fine-tune a frozen backbone** (click **Try it**).
        {{- end }}
        3. Set `spec.dataset` to the S3 prefix of your dataset (it holds `data.yaml`), `spec.output` to a prefix for the results, and `spec.s3.endpoint` to your object store (remove it for AWS S3).
        4. Click **Create**.

        The sample starts from `yolov8n.pt`, freezes the first 10 modules (the backbone) and trains 50 epochs on one GPU (`spec.resources.gpus: 1`; set 0 to train on CPU).
      review:
        instructions: |-
          {{- if $olm }}
          Does the TrainingJob appear in the list, with a **Phase** of Pending, Staging or Training?
          {{- else }}
          Does the TrainingJob appear under **Instances**, with a `status.phase` of Pending, Staging or Training in its YAML?
          {{- end }}
        failedTaskHelp: If the create was refused, the message names the field the API server rejected (for example spec.training.imgsz must be a multiple of 32).
      summary:
        success: You started a training run.
        failed: Try the steps again.
    - title: Watch it train
      description: |-
        {{- if $olm }}
        Open the TrainingJob. Its details page shows the **Phase** (Pending → Staging → Training → Uploading → Succeeded), the **Conditions**, the epoch, the latest and best mAP50-95 and the estimated time left, with links to the **Job** and the training **Pod** (its **Logs** tab shows the Ultralytics output).
        {{- else }}
        Open the TrainingJob and its **YAML** tab: `status.phase` (Pending → Staging → Training → Uploading → Succeeded), `status.conditions`, and under `status.progress` the epoch, the latest and best mAP50-95 and the estimated time left. `status.jobName` and `status.podName` name the **Job** and the training **Pod** (under **Workloads → Pods**; its **Logs** tab shows the Ultralytics output).
        {{- end }}

        From a terminal: `oc get trainingjob finetune-frozen-backbone -w` prints the phase, epoch and mAP as they change.
      review:
        instructions: |-
          {{- if $olm }}
          Does the details page show an epoch count and a mAP50-95 value after the first epoch?
          {{- else }}
          Does `status.progress` show an epoch count and a mAP50-95 value after the first epoch?
          {{- end }}
        failedTaskHelp: A job that stays Pending is waiting for a GPU node (see the Pod's events); a Failed one says why in its conditions (for example a dataset that does not exist, or wrong credentials).
      summary:
        success: You can follow training progress.
        failed: Check the conditions and the Pod's events and logs.
    - title: Find the weights
      description: |-
        When the Phase is **Succeeded**, {{ if $olm }}the details page lists{{ else }}`status.artifacts` in the YAML tab lists{{ end }} the artifacts in S3: **Best weights** (`weights/best.pt`), last weights, `results.csv`, `metrics.json`, the plots and the exported models (here ONNX), all under `<output>/<project>/<name>/<uid>/` (the TrainingJob's UID).

        From a terminal: `oc get trainingjob finetune-frozen-backbone -o jsonpath='{.status.artifacts.bestWeights}'`

        To keep training from these weights (everything unfrozen, a lower learning rate), create another TrainingJob from the sample **Continue from another TrainingJob**.
      review:
        instructions: |-
          Does the TrainingJob's status show an s3:// URI for the best weights?
        failedTaskHelp: The artifacts appear only after the Uploading phase; if the job failed while uploading, check that the credentials may write to the output bucket.
      summary:
        success: You found the trained weights.
        failed: Check the TrainingJob's conditions.
  conclusion: >-
    Your fine-tuned YOLO model is in S3. Use it for inference, export it to more formats with
    `spec.exportFormats`, or start the next TrainingJob from it with `spec.model.fromTrainingJob`.
{{- end }}
