"""hitl_sip.media"""
