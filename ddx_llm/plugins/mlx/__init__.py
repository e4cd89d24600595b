"""The mlx backend plugin: real generation with mlx-lm."""
