"""Image -> input tensor: geometry (resize/crop/letterbox) and tensor (layout, dtype, quantisation)."""
