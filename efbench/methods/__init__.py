"""The methods: the Method base, estimators and samplers, one module per family."""
