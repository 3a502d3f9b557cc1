"""numopt.completion"""
