// The console plugin template's webpack.config.ts, as plain JS (no ts-node to install): the SDK's
// ConsoleRemotePlugin turns package.json's consolePlugin and console-extensions.json into
// plugin-manifest.json and a module-federation entry (plugin-entry.js) in dist/.
const path = require('path');
const { ConsoleRemotePlugin } = require('@openshift-console/dynamic-plugin-sdk-webpack');

const isProd = process.env.NODE_ENV === 'production';

module.exports = {
  mode: isProd ? 'production' : 'development',
  context: path.resolve(__dirname, 'src'),
  entry: {},
  output: {
    path: path.resolve(__dirname, 'dist'),
    filename: isProd ? '[name]-bundle-[contenthash].min.js' : '[name]-bundle.js',
    chunkFilename: isProd ? '[name]-chunk-[contenthash].min.js' : '[name]-chunk.js',
  },
  resolve: { extensions: ['.ts', '.tsx', '.js', '.jsx'] },
  module: {
    rules: [
      {
        test: /\.(jsx?|tsx?)$/,
        exclude: /\/node_modules\//,
        use: [{ loader: 'ts-loader', options: { configFile: path.resolve(__dirname, 'tsconfig.json') } }],
      },
    ],
  },
  plugins: [new ConsoleRemotePlugin()],
  devtool: isProd ? false : 'source-map',
  optimization: { chunkIds: isProd ? 'deterministic' : 'named', minimize: isProd },
  performance: { hints: false },
};
