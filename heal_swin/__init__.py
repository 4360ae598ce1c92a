"""heal_swin"""
