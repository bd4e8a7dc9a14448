"""Telephony side: AudioSocket codec and server, paced playout, TelephonyGateway, ARI and AMI."""
