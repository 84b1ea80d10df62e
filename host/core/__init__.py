"""Host core: hook specs, plugin manager, catalogue, recipe model, runner, result types, bundles."""
