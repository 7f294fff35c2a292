"""The benchmark suites, each a module with ``run(quick) -> dict``.

``CLUSTER_SUITES`` start a Dask LocalCluster or a local Ray, and
``benchmarks.run`` starts them only inside a network namespace whose only
interface is loopback.
"""

SUITES = {
    "in_memory": "benchmarks.suites.in_memory",
    "parquet": "benchmarks.suites.parquet",
    "cluster": "benchmarks.suites.cluster",
    "scoring": "benchmarks.suites.scoring",
    "incremental": "benchmarks.suites.incremental",
    "leak": "benchmarks.suites.leak",
}
CLUSTER_SUITES = {"cluster"}
