import {
  bestOf,
  evenly,
  formatValue,
  HISTORY_MAX,
  historyOf,
  LOSSES,
  METRICS,
  seriesOf,
  SPARKLINE_MAX,
  sparklineOf,
} from '../utils/points';
import { history, job } from './fixtures';

describe('historyOf', () => {
  it('is empty without a status, a history or with a history that is not a list', () => {
    expect(historyOf(undefined)).toEqual([]);
    expect(historyOf({})).toEqual([]);
    expect(historyOf({ status: { history: { epoch: 1 } } })).toEqual([]);
  });

  it('skips points without a positive integer epoch, sorts by epoch, and a later point of an epoch wins', () => {
    const h = historyOf({
      status: {
        history: [{ epoch: 3, map50: 0.3 }, null, 'x', { map50: 0.9 }, { epoch: 0 }, { epoch: 1.5 }, { epoch: 1, map50: 0.1 }, { epoch: 3, map50: 0.33 }],
      },
    });
    expect(h.map((p) => [p.epoch, p.map50])).toEqual([
      [1, 0.1],
      [3, 0.33],
    ]);
  });

  it('keeps at most HISTORY_MAX points, the first and the last among them', () => {
    const h = historyOf({ status: { history: history(250) } });
    expect(h).toHaveLength(HISTORY_MAX);
    expect(h[0].epoch).toBe(1);
    expect(h[h.length - 1].epoch).toBe(250);
    expect(h.map((p) => p.epoch)).toEqual([...h.map((p) => p.epoch)].sort((a, b) => a - b));
  });
});

describe('evenly', () => {
  it('returns short lists as they are and spreads long ones, ends kept', () => {
    expect(evenly([1, 2, 3], 5)).toEqual([1, 2, 3]);
    expect(evenly([0, 1, 2, 3, 4, 5, 6, 7, 8], 3)).toEqual([0, 4, 8]);
    expect(evenly([0, 1, 2], 1)).toEqual([2]);
  });
});

describe('seriesOf', () => {
  it('draws one point per epoch with a finite value, and leaves out fields that have none', () => {
    const h = [
      { epoch: 1, map50: 0.1, boxLoss: 2 },
      { epoch: 2, map50: Number.NaN, boxLoss: 1.5 },
      { epoch: 3, map50: 0.3 },
    ];
    const metrics = seriesOf(h, METRICS);
    expect(metrics.map((s) => s.field)).toEqual(['map50']);
    expect(metrics[0].points).toEqual([
      { x: 1, y: 0.1 },
      { x: 3, y: 0.3 },
    ]);
    expect(seriesOf(h, LOSSES)).toEqual([{ field: 'boxLoss', name: 'Box loss', points: [{ x: 1, y: 2 }, { x: 2, y: 1.5 }] }]);
  });
});

describe('sparklineOf', () => {
  it('is mAP50-95 per epoch, at most SPARKLINE_MAX points, first and last epochs kept', () => {
    const pts = sparklineOf(job(90));
    expect(pts).toHaveLength(SPARKLINE_MAX);
    expect(pts[0]).toEqual({ x: 1, y: history(90)[0]['map50-95'] });
    expect(pts[pts.length - 1].x).toBe(90);
    expect(sparklineOf(job(5)).map((p) => p.x)).toEqual([1, 2, 3, 4, 5]);
    expect(sparklineOf({ status: { history: [{ epoch: 1, map50: 0.2 }] } })).toEqual([]);
  });
});

describe('bestOf and formatValue', () => {
  it('picks the highest mAP50-95, the earliest of equals', () => {
    const best = bestOf([
      { epoch: 1, 'map50-95': 0.2 },
      { epoch: 2, 'map50-95': 0.4 },
      { epoch: 3, 'map50-95': 0.4 },
      { epoch: 4 },
    ]);
    expect(best?.epoch).toBe(2);
    expect(bestOf([{ epoch: 1 }])).toBeUndefined();
  });

  it('keeps 4 significant digits and shows a dash for no value', () => {
    expect(formatValue(0.123456)).toBe('0.1235');
    expect(formatValue(0.00012346)).toBe('0.0001235');
    expect(formatValue(undefined)).toBe('–');
    expect(formatValue(Number.POSITIVE_INFINITY)).toBe('–');
  });
});
