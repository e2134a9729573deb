"""eks-image-prefetcher: the logic shared by the Lambda functions and the `prefetcher` CLI."""

__version__ = "0.1.0"
