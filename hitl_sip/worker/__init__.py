"""hitl_sip.worker"""
