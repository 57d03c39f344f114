"""hitl_sip.bot"""
