"""taq-adaround: block I/O cache and AdaRound W4 with learned activation scales."""
