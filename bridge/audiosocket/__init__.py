"""AudioSocket: the sans-I/O codec (`protocol`) and the asyncio TCP server (`server`)."""
