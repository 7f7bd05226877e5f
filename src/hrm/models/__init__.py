"""Models: a name -> constructor registry, layers and the model files."""
