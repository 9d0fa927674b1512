"""bench/curator: multi-tenant vector-index benchmark (DESIGN §9).

Recall@10 vs single-thread latency, 2-thread QPS, memory, build and write-op latency for
curator, PT-HNSW (`hnsw`), MF-HNSW, MF-IVF and `flat` on arXiv papers
(../shared/data), in two access workloads (categories, subscribers) and two query mixes
(data-proportional, tenant-uniform). Entry point: `python -m bench.curator --help`.
"""
