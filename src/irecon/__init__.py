"""irecon: memory-free invertible Recurrent Inference Machines for undersampled MRI."""

__version__ = "0.1.0"
