"""The one training engine: every model family trains through :func:`train_and_evaluate`."""
