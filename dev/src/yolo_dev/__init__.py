"""Development tools of yolo-operator, never shipped in an image: the local test bed (``testbed``), Kueue run
from its Go module (``kueue``) and the whole system installed on the bed (``stack``). The tests, ``make demo``
(hack/demo.py) and the benchmarks (bench/) import them."""
