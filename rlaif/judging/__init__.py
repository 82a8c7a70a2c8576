"""Judging: the judge interface and configs, rubrics, debiasing, the backends, and the engine
that judges pairs through the answer cache; also the generators that share the judges' configs."""
