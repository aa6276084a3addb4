import * as React from 'react';
import { act, render, screen } from '@testing-library/react';
import { useK8sWatchResource } from '@openshift-console/dynamic-plugin-sdk';
import TrainingTab from '../components/TrainingTab';
import { job } from './fixtures';
import { TrainingJobLike } from '../utils/points';

// The console provides the SDK at runtime; here its watch hook is a mock, as in the console plugin template.
jest.mock('@openshift-console/dynamic-plugin-sdk', () => ({ useK8sWatchResource: jest.fn() }));
const watch = useK8sWatchResource as jest.Mock;

/** The markers drawn for one field (one SVG path per epoch). */
const drawn = (container: HTMLElement, field: string) => container.querySelectorAll(`svg path.yolo-point-${field}`).length;

afterEach(() => watch.mockReset());

it('draws one marker per epoch for every curve, and the summary names the best epoch', () => {
  watch.mockReturnValue([job(6), true, undefined]);
  const { container } = render(<TrainingTab obj={job(6)} />);
  for (const field of ['map50', 'map50-95', 'precision', 'recall', 'boxLoss', 'clsLoss', 'dflLoss', 'lr']) {
    expect(drawn(container, field)).toBe(6);
  }
  expect(screen.getByTestId('training-summary').textContent).toBe(
    'Epoch 6 of 30 · mAP50-95 0.3227 · best 0.3227 (epoch 6)',
  );
  // the watch asked for this one TrainingJob by its group/version/kind
  expect(watch).toHaveBeenCalledWith({
    groupVersionKind: { group: 'yolo-operator.io', version: 'v1alpha1', kind: 'TrainingJob' },
    name: 'helmets',
    namespace: 'ml-team',
    isList: false,
  });
});

it('says no epochs yet, and draws no chart, while the history is empty', () => {
  const pending = job(0, { phase: 'Pending', progress: undefined });
  watch.mockReturnValue([pending, true, undefined]);
  const { container } = render(<TrainingTab obj={pending} />);
  expect(screen.getByText('No epochs yet')).toBeTruthy();
  expect(screen.getByText(/first epoch completes \(phase Pending\)/)).toBeTruthy();
  expect(container.querySelectorAll('svg').length).toBe(0);
});

it('draws the page object until the watch has loaded', () => {
  watch.mockReturnValue([undefined, false, undefined]);
  const { container } = render(<TrainingTab obj={job(2)} />);
  expect(drawn(container, 'map50-95')).toBe(2);
});

it('grows when the watch delivers a longer history (live, no re-render by the page)', () => {
  let deliver: (tj: TrainingJobLike) => void = () => undefined;
  // A stateful fake of the hook: like the SDK's, it re-renders its component when the watched object changes.
  watch.mockImplementation(() => {
    const [obj, setObj] = React.useState<TrainingJobLike>(job(3));
    deliver = setObj;
    return [obj, true, undefined];
  });
  const { container } = render(<TrainingTab obj={job(3)} />);
  expect(drawn(container, 'map50-95')).toBe(3);
  act(() => deliver(job(8)));
  expect(drawn(container, 'map50-95')).toBe(8);
  expect(drawn(container, 'boxLoss')).toBe(8);
  expect(screen.getByTestId('training-summary').textContent).toMatch(/^Epoch 8 of 30/);
});

it('draws GPU utilisation only where NVML reported it (a GPU run)', () => {
  const onGpu = job(3);
  onGpu.status!.history = (onGpu.status!.history as object[]).map((p, i) => ({ ...p, gpuUtil: 80 + i }));
  watch.mockReturnValue([onGpu, true, undefined]);
  const { container, unmount } = render(<TrainingTab obj={onGpu} />);
  expect(drawn(container, 'gpuUtil')).toBe(3);
  unmount();
  watch.mockReturnValue([job(3), true, undefined]);
  const cpu = render(<TrainingTab obj={job(3)} />);
  expect(cpu.container.querySelector('[data-test="training-chart-gpu"]')).toBeNull();
});

it('leaves out a chart whose field no point has (no lr on an old status)', () => {
  const tj = job(4);
  tj.status!.history = (tj.status!.history as object[]).map((p) => ({ ...p, lr: undefined }));
  watch.mockReturnValue([tj, true, undefined]);
  const { container } = render(<TrainingTab obj={tj} />);
  expect(container.querySelector('[data-test="training-chart-lr"]')).toBeNull();
  expect(drawn(container, 'map50')).toBe(4);
});
