"""Test and demo infrastructure: never part of the product.

FakeAsterisk (an AudioSocket peer on real sockets), the SpeechKit, OpenAI and IAM stand-ins (real
gRPC and HTTP servers speaking the providers' wire protocols), the shared in-process fakes used by
the tests, the benchmarks and the text demo, the SIP phone-call harness behind `make demo`, and a
virtual-time event loop.

The product imports this package only behind `voicebridge serve --standins` and `voicebridge demo`,
lazily; it is not in the product's wheel (run those from a source checkout, where `make install`
puts the checkout on the venv's path).
"""
