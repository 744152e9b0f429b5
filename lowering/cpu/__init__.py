"""lowering/cpu"""
