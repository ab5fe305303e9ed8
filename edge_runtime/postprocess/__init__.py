"""Output tensors -> results: classification, SSD, TFLite post-processed and YOLO decoders, NMS.

Pure numpy and backend-agnostic: ONNX and TFLite outputs go through exactly the same code.
"""
