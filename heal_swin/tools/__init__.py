"""Command-line tools: the projection preview (heal-swin-preview), inference on exported models
(heal-swin-infer), exporting a trained run, and the equivariance report (heal-swin-equivariance)."""
