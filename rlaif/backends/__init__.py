"""Judge backends: each module implements `rlaif.judge.Judge` for one kind of model or API."""
