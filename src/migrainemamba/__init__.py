"""MigraineMamba: daily migraine-onset forecasting."""
