"""Serving the judge as a reward over HTTP (`rlaif serve`), and reward functions that trainers
such as TRL's GRPOTrainer call, pointed at a server or at a judge in this process."""
