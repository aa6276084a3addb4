import * as React from 'react';
import { ChartGroup } from '@patternfly/react-charts/dist/esm/victory/components/ChartGroup/ChartGroup';
import { ChartLine } from '@patternfly/react-charts/dist/esm/victory/components/ChartLine/ChartLine';
import { formatValue, XY } from '../utils/points';

/** A small mAP50-95 line for a table cell (no axes), with its last value beside it. */
const Sparkline: React.FC<{ points: XY[]; name: string }> = ({ points, name }) =>
  points.length === 0 ? (
    <span data-test="sparkline-empty">–</span>
  ) : (
    <span data-test="sparkline" data-points={points.length} style={{ display: 'inline-flex', alignItems: 'center', gap: 8 }}>
      <span style={{ display: 'inline-block', height: 28, width: 120 }}>
        <ChartGroup ariaTitle={`mAP50-95 of ${name}`} height={28} width={120} padding={2} domain={{ y: [0, 1] }}>
          <ChartLine data={points.length === 1 ? [points[0], { ...points[0], x: points[0].x + 1 }] : points} />
        </ChartGroup>
      </span>
      <span>{formatValue(points[points.length - 1].y)}</span>
    </span>
  );

export default Sparkline;
