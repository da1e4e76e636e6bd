"""duality"""
