"""Judge backends: each module implements `rlaif.judging.base.Judge` for one kind of model or API."""
