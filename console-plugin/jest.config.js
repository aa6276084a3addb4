// Component and unit tests (jsdom), TypeScript through ts-jest, transpiled only (`npm run typecheck` and the
// webpack build type-check). The SDK is mocked in each test, as the console plugin template does: the
// console provides it at runtime.
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/src'],
  transform: { '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.json', isolatedModules: true }] },
  moduleNameMapper: {
    // the components import PatternFly's ES modules (for webpack); jest runs their CommonJS twins
    '^@patternfly/react-charts/dist/esm/(.*)$': '@patternfly/react-charts/dist/js/$1',
    '\\.css$': '<rootDir>/src/__tests__/style-stub.js',
  },
  setupFilesAfterEnv: ['<rootDir>/src/__tests__/setup.ts'],
  testMatch: ['**/__tests__/**/*.test.ts?(x)'],
};
