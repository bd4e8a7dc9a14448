"""Stand-in servers for tests and the demo, NEVER the product.

They speak the real wire protocols (SpeechKit v3 gRPC on the real protos, the OpenAI HTTP API)
on 127.0.0.1 so the real adapters can be exercised end to end without cloud access. Their
behaviour is scripted; nothing here belongs in a production deployment.
"""
