import type { K8sGroupVersionKind } from '@openshift-console/dynamic-plugin-sdk';

// The CRD (operator/src/yolo_operator/api/types.py); console-extensions.json names the same model.
export const TRAINING_JOB_GVK: K8sGroupVersionKind = {
  group: 'yolo-operator.io',
  version: 'v1alpha1',
  kind: 'TrainingJob',
};

/** The console's details page of a TrainingJob (the Training tab is its "training" subpage). */
export const detailsHref = (namespace: string, name: string): string =>
  `/k8s/ns/${namespace}/yolo-operator.io~v1alpha1~TrainingJob/${name}`;
