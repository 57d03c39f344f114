"""hitl_sip.alive5"""
