"""The public SIP front: Kamailio before the media workers (config generated from profiles)."""
