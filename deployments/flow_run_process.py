"""Imported by the warm-start fork server before it forks flow runs (deployments.warm_start preloads
it, and the runner imports it before forking that server): the changes every flow-run process makes
to Prefect's engine. A run started cold (`python -m prefect.engine`) does without them."""

from deployments.warm_start import heartbeats_unjoined

heartbeats_unjoined()
