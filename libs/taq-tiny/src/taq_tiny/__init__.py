"""taq-tiny: what only the tiny-digits stand-in needs, kept out of every other install.

- `data.load_digit_images`: scikit-learn's 8x8 digits as 16x16x1 latents in [-1, 1];
- `classifier`: a digit classifier on the real digits (accuracy and Fréchet distance of
  generated samples, used by `taq eval`);
- `train`: the rectified-flow trainer of the shipped tiny-digits weights
  (`taq-tiny train-tiny-digits`).

The preset itself (config, conditioner, prompt parsing, shipped weights) is part of the
DiffusionKit adapter, `taq_model.digits`.
"""
