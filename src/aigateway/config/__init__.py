"""gateway.yaml: the typed model (``model``) and the loader (``load``)."""
