import { HistoryPoint, TrainingJobLike } from '../utils/points';

/** A history of ``n`` epochs shaped like the trainer's (rising mAP, falling losses and lr). */
export const history = (n: number): HistoryPoint[] =>
  Array.from({ length: n }, (_, i) => {
    const e = i + 1;
    return {
      epoch: e,
      map50: Number((0.1 + 0.8 * (e / (n + 5))).toPrecision(4)),
      'map50-95': Number((0.05 + 0.5 * (e / (n + 5))).toPrecision(4)),
      precision: 0.5,
      recall: 0.4,
      boxLoss: Number((2 - e / (n + 1)).toPrecision(4)),
      clsLoss: Number((3 - e / (n + 1)).toPrecision(4)),
      dflLoss: 1.2,
      lr: 0.01 / e,
    };
  });

export const job = (n: number, extra: Partial<TrainingJobLike['status']> = {}): TrainingJobLike => ({
  metadata: { name: 'helmets', namespace: 'ml-team' },
  status: { phase: 'Training', progress: { epoch: n, epochs: 30 }, history: history(n), ...extra },
});
