import * as React from 'react';
import { useK8sWatchResource } from '@openshift-console/dynamic-plugin-sdk';
// One module per chart component: the package's index imports every Victory package (area, bar, pie, ...),
// which are optional peers installed here only for the components drawn.
import { Chart } from '@patternfly/react-charts/dist/esm/victory/components/Chart/Chart';
import { ChartAxis } from '@patternfly/react-charts/dist/esm/victory/components/ChartAxis/ChartAxis';
import { ChartGroup } from '@patternfly/react-charts/dist/esm/victory/components/ChartGroup/ChartGroup';
import { ChartLine } from '@patternfly/react-charts/dist/esm/victory/components/ChartLine/ChartLine';
import { ChartScatter } from '@patternfly/react-charts/dist/esm/victory/components/ChartScatter/ChartScatter';
import { ChartVoronoiContainer } from '@patternfly/react-charts/dist/esm/victory/components/ChartVoronoiContainer/ChartVoronoiContainer';
import { Point } from 'victory-core';
import { Card, CardBody, CardTitle, EmptyState, EmptyStateBody, PageSection, Title } from '@patternfly/react-core';
import {
  bestOf,
  formatValue,
  GPU_UTILISATION,
  historyOf,
  LEARNING_RATE,
  LOSSES,
  METRICS,
  Series,
  seriesOf,
  TrainingJobLike,
} from '../utils/points';
import { TRAINING_JOB_GVK } from '../utils/model';

type Props = { obj: TrainingJobLike };

const CurveChart: React.FC<{ title: string; id: string; series: Series[]; unitInterval?: boolean }> = ({
  title,
  id,
  series,
  unitInterval,
}) =>
  series.length === 0 ? null : (
  <Card data-test={`training-chart-${id}`} isPlain>
    <CardTitle>{title} per epoch</CardTitle>
    <CardBody>
      <div style={{ height: 260, maxWidth: 720 }}>
        <Chart
          ariaTitle={title}
          containerComponent={
            <ChartVoronoiContainer labels={({ datum }: { datum: { childName: string; y: number } }) => `${datum.childName}: ${formatValue(datum.y)}`} constrainToVisibleArea />
          }
          domain={unitInterval ? { y: [0, 1] } : undefined}
          height={260}
          width={720}
          legendData={series.map((s) => ({ name: s.name }))}
          legendPosition="bottom"
          padding={{ bottom: 80, left: 70, right: 30, top: 20 }}
        >
          <ChartAxis tickFormat={(t: number) => (Number.isInteger(t) ? String(t) : '')} />
          <ChartAxis dependentAxis showGrid tickFormat={(t: number) => formatValue(t)} />
          <ChartGroup>
            {series.map((s) => (
              <ChartLine key={s.field} name={s.name} data={s.points} />
            ))}
          </ChartGroup>
          {/* The points themselves, one marker per kept epoch (what the browser test counts). */}
          <ChartGroup>
            {series.map((s) => (
              <ChartScatter
                key={s.field}
                name={`${s.name} points`}
                data={s.points}
                size={2}
                dataComponent={<Point className={`yolo-point yolo-point-${s.field}`} />}
              />
            ))}
          </ChartGroup>
        </Chart>
      </div>
      {/* The same figures as text, for screen readers and tests. */}
      <ul className="pf-v6-screen-reader" data-test={`training-points-${id}`}>
        {series.map((s) => (
          <li key={s.field} data-field={s.field} data-points={s.points.length}>
            {s.name}: {s.points.length} epochs, last {formatValue(s.points[s.points.length - 1].y)}
          </li>
        ))}
      </ul>
    </CardBody>
  </Card>
);

/** The "Training" tab of a TrainingJob: its status.history as curves, updated live by a watch of the job. */
const TrainingTab: React.FC<Props> = ({ obj }) => {
  const [watched, loaded] = useK8sWatchResource<TrainingJobLike>({
    groupVersionKind: TRAINING_JOB_GVK,
    name: obj?.metadata?.name,
    namespace: obj?.metadata?.namespace,
    isList: false,
  });
  const job = loaded && watched?.metadata ? watched : obj;
  const history = historyOf(job);
  const progress = job?.status?.progress;

  if (history.length === 0) {
    return (
      <PageSection>
        <EmptyState titleText="No epochs yet" headingLevel="h2" data-test="training-empty">
          <EmptyStateBody>
            The curves appear when the first epoch completes (phase {job?.status?.phase ?? 'unknown'}).
          </EmptyStateBody>
        </EmptyState>
      </PageSection>
    );
  }
  const best = bestOf(history);
  const last = history[history.length - 1];
  return (
    <PageSection>
      <Title headingLevel="h2" data-test="training-summary">
        Epoch {progress?.epoch ?? last.epoch}
        {progress?.epochs ? ` of ${progress.epochs}` : ''} · mAP50-95 {formatValue(last['map50-95'])}
        {best ? ` · best ${formatValue(best['map50-95'])} (epoch ${best.epoch})` : ''}
      </Title>
      <CurveChart title="Validation metrics" id="metrics" series={seriesOf(history, METRICS)} unitInterval />
      <CurveChart title="Training losses" id="losses" series={seriesOf(history, LOSSES)} />
      <CurveChart title="Learning rate" id="lr" series={seriesOf(history, LEARNING_RATE)} />
      <CurveChart title="GPU utilisation" id="gpu" series={seriesOf(history, GPU_UTILISATION)} />
    </PageSection>
  );
};

export default TrainingTab;
