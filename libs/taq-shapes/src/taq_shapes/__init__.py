"""tiny-shapes: procedural scenes, prompt grammar, parsed evaluator."""
