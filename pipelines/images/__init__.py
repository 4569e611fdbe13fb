"""The image product: the image-od CLI, the benchmark over methods and protocols, the profiles and the report."""
