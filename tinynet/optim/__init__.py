"""Optimizers and learning-rate schedules with torch.optim's update rules."""
