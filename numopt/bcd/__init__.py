"""numopt.bcd"""
