"""taq-actstats: time-aware activation statistics, tiers and plots (TaQ-DiT)."""
