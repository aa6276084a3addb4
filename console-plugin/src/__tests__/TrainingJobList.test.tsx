import * as React from 'react';
import { render, screen } from '@testing-library/react';
import { useK8sWatchResource } from '@openshift-console/dynamic-plugin-sdk';
import TrainingJobList from '../components/TrainingJobList';
import { job } from './fixtures';

jest.mock('@openshift-console/dynamic-plugin-sdk', () => ({ useK8sWatchResource: jest.fn() }));
const watch = useK8sWatchResource as jest.Mock;

afterEach(() => watch.mockReset());

it('lists the jobs with a mAP50-95 sparkline of at most 24 points and a link to the details page', () => {
  const long = job(60);
  long.metadata = { name: 'long', namespace: 'ml-team' };
  const fresh = job(0, { phase: 'Pending', progress: undefined });
  fresh.metadata = { name: 'fresh', namespace: 'ml-team' };
  watch.mockReturnValue([[long, job(5), fresh], true, undefined]);
  const { container } = render(<TrainingJobList namespace="ml-team" />);

  expect(watch).toHaveBeenCalledWith({
    groupVersionKind: { group: 'yolo-operator.io', version: 'v1alpha1', kind: 'TrainingJob' },
    namespace: 'ml-team',
    isList: true,
  });
  const rows = [...container.querySelectorAll('tbody tr')].map((tr) => tr.getAttribute('data-test'));
  expect(rows).toEqual(['row-fresh', 'row-helmets', 'row-long']);

  const spark = (name: string) => container.querySelector(`[data-test="row-${name}"] [data-test="sparkline"]`);
  expect(spark('long')?.getAttribute('data-points')).toBe('24');
  expect(spark('helmets')?.getAttribute('data-points')).toBe('5');
  expect(spark('helmets')?.querySelectorAll('svg path').length).toBeGreaterThan(0);
  expect(container.querySelector('[data-test="row-fresh"] [data-test="sparkline-empty"]')).not.toBeNull();
  expect(screen.getByText('helmets').getAttribute('href')).toBe('/k8s/ns/ml-team/yolo-operator.io~v1alpha1~TrainingJob/helmets');
  expect(container.querySelector('[data-test="row-helmets"]')?.textContent).toContain('5/30');
});

it('says when there are no jobs, and shows a list error', () => {
  watch.mockReturnValue([[], true, undefined]);
  const { unmount } = render(<TrainingJobList namespace="ml-team" />);
  expect(screen.getByText('No TrainingJobs')).toBeTruthy();
  unmount();
  watch.mockReturnValue([[], false, new Error('trainingjobs is forbidden')]);
  render(<TrainingJobList />);
  expect(screen.getByText('trainingjobs is forbidden')).toBeTruthy();
});
