"""taq-bench: performance benchmarks that print ratios."""
