"""RTP over UDP: the media of an Asterisk ExternalMedia channel, as an `AudioLine`.

Asterisk's ExternalMedia (`encapsulation=rtp`, `transport=udp`) streams the
caller's audio to a UDP port of ours and plays what we send back from the same
socket. ARI only creates and bridges that channel; the audio itself is plain
RTP, so it lives here, apart from the ARI client: `packet` is the RFC 3550
wire format (pure, no I/O), `line` the socket, the pacing and the comfort
noise that keep Asterisk fed one packet every 20 ms.
"""
