"""taq-run: the glue between a taq store (taq-io) and its model (taq-model).

`open_run` opens a store and builds the model preset it was made with (refusing one whose
identity differs); `forward_calibration` replays the calibration latents through the FP
model with the conditioning and modulation they were generated with.
"""
