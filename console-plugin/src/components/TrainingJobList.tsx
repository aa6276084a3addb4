import * as React from 'react';
import { useK8sWatchResource } from '@openshift-console/dynamic-plugin-sdk';
import { EmptyState, EmptyStateBody, PageSection, Title } from '@patternfly/react-core';
import { sparklineOf, TrainingJobLike } from '../utils/points';
import { detailsHref, TRAINING_JOB_GVK } from '../utils/model';
import Sparkline from './Sparkline';

type Props = { namespace?: string };

/** The TrainingJob list page: name, phase, epoch and a mAP50-95 sparkline per job, watched live. */
const TrainingJobList: React.FC<Props> = ({ namespace }) => {
  const [jobs, loaded, error] = useK8sWatchResource<TrainingJobLike[]>({
    groupVersionKind: TRAINING_JOB_GVK,
    namespace,
    isList: true,
  });
  const rows = [...(jobs ?? [])].sort((a, b) =>
    `${a.metadata?.namespace}/${a.metadata?.name}`.localeCompare(`${b.metadata?.namespace}/${b.metadata?.name}`),
  );
  return (
    <PageSection>
      <Title headingLevel="h1">TrainingJobs</Title>
      {error ? (
        <EmptyState titleText="Cannot list TrainingJobs" headingLevel="h2" data-test="list-error">
          <EmptyStateBody>{String((error as Error)?.message ?? error)}</EmptyStateBody>
        </EmptyState>
      ) : loaded && rows.length === 0 ? (
        <EmptyState titleText="No TrainingJobs" headingLevel="h2" data-test="list-empty" />
      ) : (
        <table className="pf-v6-c-table pf-m-compact" role="grid" aria-label="TrainingJobs">
          <thead className="pf-v6-c-table__thead">
            <tr className="pf-v6-c-table__tr">
              <th className="pf-v6-c-table__th">Name</th>
              {namespace ? null : <th className="pf-v6-c-table__th">Namespace</th>}
              <th className="pf-v6-c-table__th">Phase</th>
              <th className="pf-v6-c-table__th">Epoch</th>
              <th className="pf-v6-c-table__th">mAP50-95</th>
            </tr>
          </thead>
          <tbody className="pf-v6-c-table__tbody">
            {rows.map((tj) => {
              const ns = tj.metadata?.namespace ?? '';
              const name = tj.metadata?.name ?? '';
              const progress = tj.status?.progress;
              return (
                <tr key={`${ns}/${name}`} className="pf-v6-c-table__tr" data-test={`row-${name}`}>
                  <td className="pf-v6-c-table__td">
                    <a href={detailsHref(ns, name)}>{name}</a>
                  </td>
                  {namespace ? null : <td className="pf-v6-c-table__td">{ns}</td>}
                  <td className="pf-v6-c-table__td">{tj.status?.phase ?? '–'}</td>
                  <td className="pf-v6-c-table__td">
                    {progress?.epochs ? `${progress.epoch ?? 0}/${progress.epochs}` : '–'}
                  </td>
                  <td className="pf-v6-c-table__td">
                    <Sparkline points={sparklineOf(tj)} name={name} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </PageSection>
  );
};

export default TrainingJobList;
