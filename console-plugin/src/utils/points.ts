// Pure data -> points functions: what the Training tab and the list's sparkline draw from status.history.
// status.history is written by the trainer (yolo_contract.progress.TrainerReport.history): at most 100 points,
// oldest first, keys as the CRD serialises them (map50-95, boxLoss, ...). Nothing here trusts its shape: a
// malformed point (no integer epoch) is skipped, a missing or non-finite value leaves a gap, never a NaN.

export type HistoryPoint = {
  epoch: number;
  map50?: number;
  'map50-95'?: number;
  precision?: number;
  recall?: number;
  boxLoss?: number;
  clsLoss?: number;
  dflLoss?: number;
  lr?: number;
  gpuUtil?: number;
  gpuMemMib?: number;
};

export type Field = Exclude<keyof HistoryPoint, 'epoch'>;
export type XY = { x: number; y: number };
export type Series = { field: Field; name: string; points: XY[] };

export type TrainingJobLike = {
  metadata?: { name?: string; namespace?: string };
  status?: {
    phase?: string;
    history?: unknown;
    progress?: { epoch?: number; epochs?: number; 'bestMap50-95'?: number; bestEpoch?: number };
  };
};

/** The CRD's bound on status.history (yolo_contract.progress.HISTORY_MAX): more is never drawn. */
export const HISTORY_MAX = 100;
/** Points of a list sparkline: enough for a shape, few enough for a table cell. */
export const SPARKLINE_MAX = 24;

export const METRICS: { field: Field; name: string }[] = [
  { field: 'map50', name: 'mAP50' },
  { field: 'map50-95', name: 'mAP50-95' },
  { field: 'precision', name: 'Precision' },
  { field: 'recall', name: 'Recall' },
];
export const LOSSES: { field: Field; name: string }[] = [
  { field: 'boxLoss', name: 'Box loss' },
  { field: 'clsLoss', name: 'Class loss' },
  { field: 'dflLoss', name: 'DFL loss' },
];
export const LEARNING_RATE: { field: Field; name: string }[] = [{ field: 'lr', name: 'Learning rate' }];
/** NVML's figures, on GPUs only (absent on CPU: the chart is left out). */
export const GPU_UTILISATION: { field: Field; name: string }[] = [{ field: 'gpuUtil', name: 'GPU utilisation %' }];

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** The valid points of status.history, by epoch (a later point of an epoch replaces an earlier one), at most
 * HISTORY_MAX of them. */
export const historyOf = (obj: TrainingJobLike | undefined | null): HistoryPoint[] => {
  const raw = obj?.status?.history;
  if (!Array.isArray(raw)) return [];
  const byEpoch = new Map<number, HistoryPoint>();
  for (const p of raw) {
    if (p && typeof p === 'object' && Number.isInteger((p as HistoryPoint).epoch) && (p as HistoryPoint).epoch >= 1) {
      byEpoch.set((p as HistoryPoint).epoch, p as HistoryPoint);
    }
  }
  const points = [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  return evenly(points, HISTORY_MAX);
};

/** At most ``max`` items: the first, the last and an even spread between (order kept). */
export const evenly = <T>(items: T[], max: number): T[] => {
  if (items.length <= max) return items;
  if (max < 2) return items.slice(-max);
  const out: T[] = [];
  for (let i = 0; i < max; i++) out.push(items[Math.round((i * (items.length - 1)) / (max - 1))]);
  return out;
};

/** One series per field that has at least one finite value: x the epoch, y the value. */
export const seriesOf = (history: HistoryPoint[], fields: { field: Field; name: string }[]): Series[] =>
  fields
    .map(({ field, name }) => ({
      field,
      name,
      points: history.filter((p) => finite(p[field])).map((p) => ({ x: p.epoch, y: p[field] as number })),
    }))
    .filter((s) => s.points.length > 0);

/** The list's sparkline: mAP50-95 per epoch, at most SPARKLINE_MAX points (first and last kept). */
export const sparklineOf = (obj: TrainingJobLike | undefined | null, max = SPARKLINE_MAX): XY[] =>
  evenly(
    historyOf(obj)
      .filter((p) => finite(p['map50-95']))
      .map((p) => ({ x: p.epoch, y: p['map50-95'] as number })),
    max,
  );

/** The point with the highest mAP50-95 (the earliest of equals), as the trainer picks best.pt. */
export const bestOf = (history: HistoryPoint[]): HistoryPoint | undefined =>
  history.reduce<HistoryPoint | undefined>(
    (best, p) => (finite(p['map50-95']) && (!best || p['map50-95'] > (best['map50-95'] as number)) ? p : best),
    undefined,
  );

/** A value for a label: 4 significant digits at most, an en dash for nothing. */
export const formatValue = (v: number | undefined): string => (finite(v) ? String(Number(v.toPrecision(4))) : '–');
