"""hitl_sip.speech"""
