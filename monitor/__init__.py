"""finsent monitor: the online half (Kafka in, scores, trends and alerts out).

Never imports torch or transformers: a worker needs only onnxruntime,
tokenizers, faust and prometheus-client.
"""

__version__ = "0.1.0"
