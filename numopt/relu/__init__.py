"""numopt.relu"""
